# Where the calls and profiles are stored, derived from the service's region (terraform/README.md,
# "Data location"). No provider: tests/infra applies this module alone for a table of regions.
#
# A region in the United States maps to the US multi-region of BigQuery ("data centers in the
# United States") and Firestore's nam5 (United States); a region in a member state of the European
# Union to BigQuery's EU multi-region ("data centers within member states of the European Union")
# and Firestore's eur3 (Europe); any other region to itself (London and Zurich are in Europe but not
# in the EU: they keep their data in the region).
# https://cloud.google.com/bigquery/docs/locations, https://cloud.google.com/firestore/native/docs/locations

variable "region" {
  description = "Region of the Cloud Run service."
  type        = string
}

variable "bigquery_location" {
  description = "Explicit BigQuery location, or null to derive it from the region."
  type        = string
  default     = null
}

variable "firestore_location" {
  description = "Explicit Firestore location, or null to derive it from the region."
  type        = string
  default     = null
}

variable "allow_data_outside_region" {
  description = "Accept explicit locations outside the region's geography."
  type        = bool
  default     = false
}

locals {
  eu_member_regions = [
    "europe-central2",   # Warsaw
    "europe-north1",     # Finland
    "europe-north2",     # Stockholm
    "europe-southwest1", # Madrid
    "europe-west1",      # Belgium
    "europe-west3",      # Frankfurt
    "europe-west4",      # Netherlands
    "europe-west8",      # Milan
    "europe-west9",      # Paris
    "europe-west10",     # Berlin
    "europe-west12",     # Turin
  ]
  region    = lower(var.region)
  geography = startswith(local.region, "us-") ? "US" : contains(local.eu_member_regions, local.region) ? "EU" : local.region

  derived = {
    US = { bigquery = "US", firestore = "nam5" }
    EU = { bigquery = "EU", firestore = "eur3" }
  }
  bigquery_location  = coalesce(var.bigquery_location, lookup(local.derived, local.geography, { bigquery = var.region }).bigquery)
  firestore_location = coalesce(var.firestore_location, lookup(local.derived, local.geography, { firestore = var.region }).firestore)

  # The geography a location keeps its data in: a multi-region's, or a region's own.
  multi_region_geography = { us = "US", nam5 = "US", nam7 = "US", eu = "EU", eur3 = "EU" }
  bigquery_geography = lookup(
    local.multi_region_geography, lower(local.bigquery_location),
    startswith(lower(local.bigquery_location), "us-") ? "US" : contains(local.eu_member_regions, lower(local.bigquery_location)) ? "EU" : lower(local.bigquery_location)
  )
  firestore_geography = lookup(
    local.multi_region_geography, lower(local.firestore_location),
    startswith(lower(local.firestore_location), "us-") ? "US" : contains(local.eu_member_regions, lower(local.firestore_location)) ? "EU" : lower(local.firestore_location)
  )
}

output "bigquery_location" {
  description = "Location of the BigQuery dataset."
  value       = local.bigquery_location

  precondition {
    condition     = var.allow_data_outside_region || local.bigquery_geography == local.geography
    error_message = "bigquery_location ${local.bigquery_location} stores the calls outside the geography of region ${var.region} (${local.geography}). Leave it null to derive it from the region, or set allow_data_outside_region = true to accept."
  }
}

output "firestore_location" {
  description = "Location of the Firestore database."
  value       = local.firestore_location

  precondition {
    condition     = var.allow_data_outside_region || local.firestore_geography == local.geography
    error_message = "firestore_location ${local.firestore_location} stores the profiles and dead letters outside the geography of region ${var.region} (${local.geography}). Leave it null to derive it from the region, or set allow_data_outside_region = true to accept."
  }
}

output "geography" {
  description = "US, EU or the region itself: where the data stays."
  value       = local.geography
}
