"""The official Python server SDK (PyPI `pusher`) against wsgate's Pusher HTTP API.

Called by suite.mjs, one command per run; prints the SDK's answer as JSON.
Connection details come from the environment: PUSHER_APP_ID, PUSHER_KEY,
PUSHER_SECRET, and PUSHER_HOST / PUSHER_PORT (a gateway's admin listener).

  sdk.py trigger CHANNEL EVENT DATA [SOCKET_ID]
                                   (a refusal other than 400/401/403: {"status": N, "error": ...})
  sdk.py info CHANNEL              channel_info with subscription_count (and user_count on presence-)
  sdk.py channels PREFIX           channels_info filtered by PREFIX (user_count for presence-)
  sdk.py users CHANNEL             users_info
  sdk.py bad-signature             triggers with a wrong secret: prints the status the SDK reported
"""

import json
import os
import sys

import pusher


def client(secret=None):
    return pusher.Pusher(
        app_id=os.environ["PUSHER_APP_ID"],
        key=os.environ["PUSHER_KEY"],
        secret=secret or os.environ["PUSHER_SECRET"],
        host=os.environ["PUSHER_HOST"],
        port=int(os.environ["PUSHER_PORT"]),
        ssl=False,
    )


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "trigger":
        channel, event, data = args[:3]
        socket_id = args[3] if len(args) > 3 else None
        try:
            answer = client().trigger([channel], event, json.loads(data), socket_id=socket_id)
        except pusher.errors.PusherBadStatus as error:
            # The SDK says "<status>: <body>".
            status, _, body = str(error).partition(": ")
            print(json.dumps({"status": int(status), "error": body}))
            return
        print(json.dumps(answer))
    elif command == "info":
        attributes = ["subscription_count"]
        if args[0].startswith("presence-"):
            attributes.append("user_count")
        print(json.dumps(client().channel_info(args[0], attributes)))
    elif command == "channels":
        attributes = ["user_count"] if args[0].startswith("presence-") else []
        print(json.dumps(client().channels_info(prefix_filter=args[0], attributes=attributes)))
    elif command == "users":
        print(json.dumps(client().users_info(args[0])))
    elif command == "bad-signature":
        try:
            client(secret="not-the-secret").trigger(["c"], "e", {})
        except pusher.errors.PusherBadAuth as error:
            print(json.dumps({"status": 401, "error": str(error)}))
            return
        print(json.dumps({"status": 200}))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
