"""The yardstick: the prefetch handler a user would write by hand (one document read, no
deadline, no cache, no validation). Served by functions-framework beside ours in the benchmark."""

import os

import flask
import functions_framework
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

db = firestore.Client(
    project=os.environ["GOOGLE_CLOUD_PROJECT"],
    credentials=AnonymousCredentials() if os.environ.get("FIRESTORE_EMULATOR_HOST") else None,
)


@functions_framework.http
def prefetch(request: flask.Request) -> flask.Response | tuple[str, int]:
    if request.path == "/healthz":
        return "ok", 200
    snapshot = db.collection("profiles").document(request.args["from"]).get()
    return flask.jsonify(snapshot.to_dict() or {})
