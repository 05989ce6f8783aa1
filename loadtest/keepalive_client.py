#!/usr/bin/env python3
"""Posts one review N times over a single keep-alive HTTPS (HTTP/1.1)
connection and checks each answer is a 200: the steady, deterministic load
that loadtest/profile.sh profiles the servers under.

    keepalive_client.py URL CA_PEM REVIEW_FILE N
"""

import http.client
import ssl
import sys
import urllib.parse


def main():
    url, ca, review, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    parts = urllib.parse.urlsplit(url)
    body = open(review, "rb").read()
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=60)
    headers = {"Content-Type": "application/json"}
    for i in range(count):
        connection.request("POST", parts.path or "/", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            print(f"request {i}: status {response.status}: {answer[:200]!r}", file=sys.stderr)
            return 1
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
