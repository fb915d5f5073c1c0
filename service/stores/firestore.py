"""The google-cloud-firestore client, for dead letters, the replay job and the scripts. Imported
only where used: the prefetch reads profiles over REST (service/prefetch/firestore_rest.py) and
never loads this client."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud import firestore


def make_client(project: str, database: str) -> firestore.Client:
    """A client for real Firestore, or for the emulator named by FIRESTORE_EMULATOR_HOST."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return firestore.Client(
            project=project,
            database=database,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    return firestore.Client(project=project, database=database)
