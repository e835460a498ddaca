"""Seeds the server under .ci/schemathesis with objects to fuzz against.

Creates three credit systems (scale 0, 2 and 6), each with a customer, a
wallet holding paid, recurring bundled and expiring promotional grants, a
debit, a hold and a promotional credit, and a webhook endpoint (created
first, so every seeded event has a delivery to it), then writes their ids as
schemathesis dictionaries (one quoted id a line) that .ci/schemathesis.toml
binds to the `id` parameters and id fields, so fuzzed calls reach real
objects instead of stopping at 404.

Usage: python schemathesis-seed.py BASE_URL ADMIN_KEY OUT_DIR
"""

import json
import sys
import time
import urllib.request

base, key, out_dir = sys.argv[1:]


def post(path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


ids = {
    name: []
    for name in [
        "credit_systems",
        "customers",
        "wallets",
        "grants",
        "debits",
        "holds",
        "promotional_credits",
        "webhook_endpoints",
        "events",
        "webhook_deliveries",
    ]
}
# Nothing listens on the discard port: every delivery fails and is retried,
# so the log holds pending deliveries and attempts with errors.
endpoint = post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
ids["webhook_endpoints"].append(endpoint)
for scale in (0, 2, 6):
    system = post(
        "/v1/credit_systems",
        {"key": f"seed_{scale}", "name": f"Seed {scale}", "unit": "credits", "scale": scale},
    )
    ids["credit_systems"].append(system)
    customer = post(
        "/v1/customers",
        {"name": f"Seed customer {scale}", "email": f"seed{scale}@example.com", "external_id": f"seed_{scale}"},
    )
    ids["customers"].append(customer)
    wallet = post(
        "/v1/wallets",
        {"customer_id": customer, "credit_system_id": system, "overdraft_limit": "10"},
    )
    ids["wallets"].append(wallet)
    grants = f"/v1/wallets/{wallet}/grants"
    ids["grants"].append(post(grants, {"amount": "1000000", "purpose": "paid"}))
    ids["grants"].append(
        post(grants, {"amount": "500", "purpose": "bundled", "recurrence": {"interval": "month"}, "rollover_max": "100"})
    )
    ids["grants"].append(
        post(grants, {"amount": "50", "purpose": "promotional", "expires_at": "2099-01-01T00:00:00Z"})
    )
    ids["debits"].append(post(f"/v1/wallets/{wallet}/debits", {"amount": "75"}))
    ids["holds"].append(post(f"/v1/wallets/{wallet}/holds", {"amount": "20", "expires_in_seconds": 86400}))
    ids["promotional_credits"].append(
        post(
            "/v1/promotional_credits",
            {"name": f"Seed promotion {scale}", "credit_system_id": system, "quantity": "25", "reset_interval": "month"},
        )
    )



def get(path):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


ids["events"] = [event["id"] for event in get("/v1/events?limit=20")["data"]]
# The delivery loop fans events out to endpoints within a moment.
for _ in range(100):
    deliveries = get(f"/v1/webhook_endpoints/{endpoint}/deliveries?limit=20")["data"]
    if deliveries:
        ids["webhook_deliveries"] = [delivery["id"] for delivery in deliveries]
        break
    time.sleep(0.1)
else:
    sys.exit("no webhook deliveries were made for the seeded events")

for name, values in ids.items():
    with open(f"{out_dir}/{name}.dict", "w") as out:
        out.write("".join(f'"{value}"\n' for value in values))
print("seeded:", ", ".join(f"{len(values)} {name}" for name, values in ids.items()))
