"""Caller memory: what an agent's earlier calls with a caller left behind, kept in Firestore by
the end-of-call webhook and served by the prefetch (docs/profiles.md, "Caller memory").

settings.py   the agent's `memory` field, read and checked; whose memory a profile allows
paths.py      where memory and its session markers live
serve.py      a memory document as the prefetch shows it
record.py     one call's contribution, applied exactly once in a Firestore transaction
recorder.py   the end-of-call's update, bounded in time, never at the call's expense
catch_up.py   updates the end-of-call missed, applied again from BigQuery by the replay job
erase.py      erasing a caller's memory or one session's part of it

settings.py, paths.py and serve.py are pure: the prefetch imports them and nothing else of this
package (never the google-cloud-firestore client). The package never imports service.prefetch,
service.end_of_call or service.web: whose call it is (the prefetch's caller identity) is handed
in.
"""
