# Where the data lives follows the service's region (modules/data_location).
module "data_location" {
  source = "./modules/data_location"

  region                    = var.region
  bigquery_location         = var.bigquery_location
  firestore_location        = var.firestore_location
  allow_data_outside_region = var.allow_data_outside_region
}
