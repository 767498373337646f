"""Verifies captured webhook deliveries with the `standardwebhooks` package (PyPI), an
implementation independent of the server's. Usage: verify_webhooks.py SECRET FILE, where FILE
holds one JSON object per line: {"headers": {...}, "body": "<exact body text>"}."""
import json
import sys

from standardwebhooks.webhooks import Webhook

secret, path = sys.argv[1], sys.argv[2]
hook = Webhook(secret)
count = 0
with open(path) as f:
    for line in f:
        delivery = json.loads(line)
        hook.verify(delivery["body"], delivery["headers"])  # raises if the signature is wrong
        count += 1
print(f"{count} webhook signatures verified")
if count == 0:
    sys.exit("no webhooks to verify")
