"""Realistic secret shapes (each must be gone from what is stored) and harmless configurations
(each must be stored unchanged). Tokens are fake: right format, random-looking, never issued."""

from __future__ import annotations

from typing import Any

# (description, agent configuration fragment, the secret that must not survive)
SECRETS: list[tuple[str, dict[str, Any], str]] = [
    ("api_key", {"api_key": "k-93jd83jdk2"}, "k-93jd83jdk2"),
    ("camel apiKey", {"apiKey": "qpwoeiruty1234"}, "qpwoeiruty1234"),
    ("plural api_keys", {"api_keys": ["first-secret-1", "second-secret-2"]}, "second-secret-2"),
    ("plural tokens", {"tokens": "tok-abc-123"}, "tok-abc-123"),
    ("camel accessTokens", {"accessTokens": ["at-998877"]}, "at-998877"),
    ("keys map", {"keys": {"openai": "mapped-secret-1"}}, "mapped-secret-1"),
    ("x-api-key", {"X-API-Key": "xak-55555"}, "xak-55555"),
    ("client_secret", {"client_secret": "cs-2k3j4h5g"}, "cs-2k3j4h5g"),
    ("clientSecret", {"oauth": {"clientSecret": "csx-12345"}}, "csx-12345"),
    ("password", {"password": "correct horse"}, "correct horse"),
    ("pass", {"db": {"user": "u", "pass": "hunter2!"}}, "hunter2!"),
    ("pwd", {"pwd": "Pw0rd#1"}, "Pw0rd#1"),
    ("pin number", {"pin": 482913}, "482913"),
    ("passcode", {"passcode": "7788"}, "7788"),
    ("passwd", {"smtp_passwd": "mailpass9"}, "mailpass9"),
    ("private_key", {"private_key": "PK-material-xyz"}, "PK-material-xyz"),
    ("credentials obj", {"credentials": {"user": "a", "secret": "cred-s3"}}, "cred-s3"),
    ("authorization", {"authorization": "Basic dXNlcjpwYXNz"}, "dXNlcjpwYXNz"),
    ("cookie", {"cookie": "sid=abcdef123456"}, "abcdef123456"),
    ("signature", {"webhookSignature": "sig-3939"}, "sig-3939"),
    (
        "header dict",
        {"tools": [{"headers": {"X-Custom-Auth": "hdr-secret-77"}}]},
        "hdr-secret-77",
    ),
    (
        "request_headers pairs",
        {"request_headers": [{"name": "Authorization", "value": "Bearer rh-secret-1"}]},
        "rh-secret-1",
    ),
    (
        "extraHeaders key/value",
        {"extraHeaders": [{"key": "X-Token", "value": "xh-secret-2"}]},
        "xh-secret-2",
    ),
    (
        "pair outside a header list",
        {"params": [{"name": "api_token", "value": "pp-secret-3"}]},
        "pp-secret-3",
    ),
    (
        "header/value pair",
        {"http": {"fields": [{"header": "Authorization", "value": "hv-secret-4"}]}},
        "hv-secret-4",
    ),
    (
        "url in free text",
        {"prompt": "Post to https://api.acme.io/v1/hook?token=url-secret-5 after the call."},
        "url-secret-5",
    ),
    (
        "url with leading spaces",
        {"webhook": "   https://api.acme.io/v1?apiKey=url-secret-6"},
        "url-secret-6",
    ),
    ("url userinfo", {"url": "https://admin:ui-secret-7@db.acme.io/x"}, "ui-secret-7"),
    (
        "url lone userinfo token",
        {"url": "https://ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8@github.com/acme/repo.git"},
        "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    ),
    (
        "fragment token",
        {"url": "https://app.acme.io/cb#access_token=frag-secret-8"},
        "frag-secret-8",
    ),
    ("oauth code", {"url": "https://app.acme.io/cb?code=code-secret-9&state=x"}, "code-secret-9"),
    (
        "sas sig",
        {"url": "https://x.blob.core.windows.net/c/b?sv=2022&sig=sas-secret-10"},
        "sas-secret-10",
    ),
    (
        "semicolon query",
        {"url": "https://api.acme.io/x?a=1;token=semi-secret-11"},
        "semi-secret-11",
    ),
    (
        "slack webhook",
        {"notify": "https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/slackpathsecret12"},
        "slackpathsecret12",
    ),
    (
        "telegram bot url",
        {"notify": "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/send"},
        "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
    ),
    (
        "discord webhook",
        {"notify": "https://discord.com/api/webhooks/123456/discordWebhookSecret13"},
        "discordWebhookSecret13",
    ),
    ("unparseable url", {"url": "https://u:unparse-secret-14@[::1/x"}, "unparse-secret-14"),
    (
        "random path token",
        {"url": "https://api.acme.io/hooks/Zq8vT3mL9xW2rK7pN4bF6hJ1sD5gC0aY/run"},
        "Zq8vT3mL9xW2rK7pN4bF6hJ1sD5gC0aY",
    ),
    (
        "openai project key",
        {"model_settings": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"},
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    ),
    (
        "openai legacy key in prompt",
        {"prompt": "Use sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zA0 for calls."},
        "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zA0",
    ),
    (
        "anthropic key",
        {"llm": {"extra": "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"}},
        "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    ),
    (
        "stripe live",
        {"billing": "sk_live_51Hx2bC3dE4fG5hI6jK7lM8n"},
        "sk_live_51Hx2bC3dE4fG5hI6jK7lM8n",
    ),
    (
        "stripe test",
        {"billing": "sk_test_4eC39HqLyjWDarjtT1zdp7dc"},
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    ),
    (
        "stripe restricted",
        {"b": "rk_live_51Hx2bC3dE4fG5hI6jK7lM8n"},
        "rk_live_51Hx2bC3dE4fG5hI6jK7lM8n",
    ),
    (
        "jwt under innocent key",
        {
            "context": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        },
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("aws access key id", {"storage": "AKIAIOSFODNN7EXAMPLE"}, "AKIAIOSFODNN7EXAMPLE"),
    (
        "github token",
        {"repo": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"},
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    ),
    ("gitlab token", {"ci": "glpat-xYz1AbC2dEf3GhI4jKl5"}, "glpat-xYz1AbC2dEf3GhI4jKl5"),
    (
        "slack bot token",
        {"chat": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"},
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    (
        "sendgrid key",
        {"mail": "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"},
        "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr",
    ),
    (
        "twilio account sid",
        {"voip": "AC0123456789abcdef0123456789abcdef"},
        "AC0123456789abcdef0123456789abcdef",
    ),
    (
        "google api key",
        {"maps": "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"},
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    ),
    (
        "private key block",
        {
            "tls": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----"
        },
        "MIIEpAIBAAKCAQEA7x",
    ),
    (
        "connection string",
        {"db": "Server=tcp:db.acme.io;Database=crm;User Id=app;Password=conn-secret-15;"},
        "conn-secret-15",
    ),
    (
        "azure connection string",
        {"queue": "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKey=azk-secret-16="},
        "azk-secret-16",
    ),
    ("bearer colon", {"note": "Authorization header: Bearer: bc-secret-17"}, "bc-secret-17"),
    ("bearer partly hidden", {"note": "send Bearer abc$S3cr3t18 to the API"}, "abc$S3cr3t18"),
    (
        "basic auth in text",
        {"note": "use Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ== please"},
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
    ),
    (
        "high entropy standalone",
        {"opaque": "Qm9vZ2llV29vZ2llMTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1u"},
        "Qm9vZ2llV29vZ2llMTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1u",
    ),
    (
        "hex api key",
        {"tts_config": "e3b0c44298fc1c149afbf4c8996fb924"},
        "e3b0c44298fc1c149afbf4c8996fb924",
    ),
    (
        "whsec secret",
        {"signing": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
    ("nested list of secrets", {"auth": [{"user": "a", "token": "ln-secret-19"}]}, "ln-secret-19"),
]

# Agent configurations with nothing secret: stored exactly as sent.
HARMLESS: list[dict[str, Any]] = [
    {
        "name": "Ava",
        "language": "en-US",
        "voice": {"provider": "elevenlabs", "voice_id": "21m00Tcm4TlvDq8ikWAM"},
        "llm": {"model": "gpt-4o-mini", "temperature": 0.4, "max_tokens": 300},
        "prompt": "You are Ava, the receptionist of Acme Dental. Keep answers short.",
        "first_message": "Hello! How can I help you today?",
    },
    {
        "keywords": ["Acme", "dental", "appointment"],
        "monkey_mode": False,
        "keyboard_layout": "qwerty",
        "session_timeout": 600,
        "token_limit": 4000,
        "use_api_key": True,
        "tools": [
            {
                "name": "book_appointment",
                "description": "Book a slot",
                "url": "https://api.acme.io/v1/appointments?page=2&sort=asc",
                "method": "POST",
            }
        ],
    },
    {
        "session_id": "550e8400-e29b-41d4-a716-446655440000",
        "website": "https://acme.io/pricing#plans",
        "prompt": "Call the customer by name. Refer to order numbers like A-1234.",
        "author": "ops team",
        "primary_color": "#0044ff",
    },
]

# Shapes the detectors above miss (round two of adversarial testing): each sits where a real agent
# configuration would hold it. With the allowlist (the default) none may reach any column: most are
# dropped with the structure around them, those in kept text (the prompt, a tool's description)
# are found by the detectors, the second layer.
MISSED_BY_DETECTORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown key word in a tool",
        {"tools": [{"name": "crm_lookup", "hubspot_pat": "na1.Zk7c1e0f52Lq"}]},
        "na1.Zk7c1e0f52Lq",
    ),
    (
        "license under voice",
        {"voice": {"provider": "custom", "license": "LIC-4471-ACME-9921-QX"}},
        "LIC-4471-ACME-9921-QX",
    ),
    (
        "access under an integration",
        {"integrations": {"calendly": {"access": "cly_8Hq2vN4mT7pR1xZ"}}},
        "cly_8Hq2vN4mT7pR1xZ",
    ),
    (
        "Millis tool header, other case",
        {"tools": [{"name": "book", "Header_Map": {"X-Acme-Session": "sess_2Pq9xV7mK4tL8wR"}}]},
        "sess_2Pq9xV7mK4tL8wR",
    ),
    (
        "header list under another name",
        {
            "tools": [
                {
                    "name": "book",
                    "customHeaderList": [{"name": "X-Org-Session", "value": "orgsess-5Yh3kD9pQ2"}],
                }
            ]
        },
        "orgsess-5Yh3kD9pQ2",
    ),
    (
        "header map under another name",
        {"tools": [{"name": "quote", "http": {"X-Tenant-Ref": "tcr-88Zk3Lp0Wq"}}]},
        "tcr-88Zk3Lp0Wq",
    ),
    (
        "headers held as JSON text",
        {"tools": [{"name": "ship", "headers_json": '{"X-Shipper-Id": "shp-41QwErTy77"}'}]},
        "shp-41QwErTy77",
    ),
    (
        "cookie jar text",
        {"browser": {"jar": "sessionid=Hq7Zk2Lm9Np4; csrftoken=Xc5Vb8Nm1Qw3"}},
        "Hq7Zk2Lm9Np4",
    ),
    (
        "cookie pairs",
        {
            "session_store": [
                {"domain": "crm.acme.io", "name": "JSESSIONID", "value": "A1B2C3D4E5F6A7B8"}
            ]
        },
        "A1B2C3D4E5F6A7B8",
    ),
    ("env list", {"env": ["CRM_USER=acme", "CRM_PASS=Gr33nF1eld!"]}, "Gr33nF1eld!"),
    ("env map", {"runtime": {"MAILGUN_SIGNING": "mg-sign-31f9a0c2"}}, "mg-sign-31f9a0c2"),
    (
        "YAML held as text",
        {"integration_yaml": "crm:\n  user: acme\n  secret_value: Hunter22Crm\n"},
        "Hunter22Crm",
    ),
    (
        "JSON held as text",
        {"mcp_config": '{"servers": {"crm": {"env": {"CRM_API_KEY": "crmk-77Jd0Pq"}}}}'},
        "crmk-77Jd0Pq",
    ),
    (
        "user:pass in a curl command",
        {
            "tools": [
                {"name": "health", "command": "curl -u ops:Tr0ub4dor3 https://crm.acme.io/health"}
            ]
        },
        "Tr0ub4dor3",
    ),
    (
        "password flag in a command",
        {"jobs": {"sync": "mysql -u app -pS3cretPassX crm"}},
        "S3cretPassX",
    ),
    (
        "zapier capability url",
        {
            "tools": [
                {
                    "name": "notify",
                    "webhook": "https://hooks.zapier.com/hooks/catch/1234567/bq3x9z1/",
                }
            ]
        },
        "bq3x9z1",
    ),
    (
        "n8n webhook path",
        {
            "tools": [
                {
                    "name": "n8n",
                    "webhook": "https://acme.app.n8n.cloud/webhook/3f2a9c1e-7b4d-4e8f-9a6b-1c2d3e4f5a6b",
                }
            ]
        },
        "3f2a9c1e-7b4d-4e8f-9a6b-1c2d3e4f5a6b",
    ),
    (
        "capability host",
        {"session_data_webhook": "https://eo1a2b3c4d5e6f7.m.pipedream.net/"},
        "eo1a2b3c4d5e6f7",
    ),
    (
        "short query token",
        {"extra_prompt_webhook": {"url": "https://eoc.acme.io/prefetch?t=q8Zk2Lm9", "headers": {}}},
        "q8Zk2Lm9",
    ),
    ("bare query string", {"callback_params": "tenant=acme&auth_code=77f2e1d9"}, "77f2e1d9"),
    (
        "query fragment in text",
        {"storage": {"blob_query": "?sv=2022-11-02&sr=b&sig=Qm7xY2k%3D"}},
        "Qm7xY2k%3D",
    ),
    (
        "elevenlabs key in the prompt",
        {
            "prompt": "If the TTS fails, retry with key sk_3f7a9c1e5b2d8f4a6c0e9b7d5f3a1c8e2b4d6f8a0c1e3b5d."
        },
        "sk_3f7a9c1e5b2d8f4a6c0e9b7d5f3a1c8e2b4d6f8a0c1e3b5d",
    ),
    (
        "deepgram key in a tool description",
        {
            "tools": [
                {
                    "name": "stt",
                    "description": "Transcribes with Deepgram (4f8c2a9e1b7d3f5a6c0e8b2d4f6a1c3e5b7d9f0a).",
                }
            ]
        },
        "4f8c2a9e1b7d3f5a6c0e8b2d4f6a1c3e5b7d9f0a",
    ),
    (
        "password in the prompt",
        {
            "prompt": "Staff portal login is frontdesk / password: Sunflower2024! (do not read it out)."
        },
        "Sunflower2024!",
    ),
    (
        "env assignment in a message",
        {
            "flow": {
                "voicemail": {
                    "action": "message",
                    "message": "Leave a message. SMTP_PASS=Mailb0x!23",
                }
            }
        },
        "Mailb0x!23",
    ),
    (
        "app function credentials",
        {"app_functions": [{"name": "gcal", "oauth_blob": "1//0gLk2Xq9Vb7Nm3Pz"}]},
        "1//0gLk2Xq9Vb7Nm3Pz",
    ),
    (
        "parameter default",
        {
            "tools": [
                {
                    "name": "crm",
                    "parameters": {
                        "type": "object",
                        "properties": {"account": {"type": "string", "default": "acct-live-93Kd7"}},
                    },
                }
            ]
        },
        "acct-live-93Kd7",
    ),
]


def merged(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    """One agent configuration holding every fragment where it sits: objects merged, lists (tools)
    joined, texts (the prompt) one after the other."""
    config: dict[str, Any] = {}
    for fragment in fragments:
        _merge_into(config, fragment)
    return config


def _merge_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        present = target.get(key)
        if isinstance(present, dict) and isinstance(value, dict):
            _merge_into(present, value)
        elif isinstance(present, list) and isinstance(value, list):
            present.extend(value)
        elif isinstance(present, str) and isinstance(value, str):
            target[key] = f"{present}\n{value}"
        else:
            target[key] = value
