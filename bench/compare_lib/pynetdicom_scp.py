"""Minimal pynetdicom storage SCP for bench/compare.

Writes each received data set, as received and without decoding, to
OUTPUT_DIR/<SOP Instance UID>.dcm with Part 10 file meta information, and
returns Success (0x0000). It does not fsync.
"""

import argparse
import logging
import os
import signal
import sys

from pynetdicom import AE, AllStoragePresentationContexts, evt


def handle_store(event, output_dir):
    uid = event.request.AffectedSOPInstanceUID
    path = os.path.join(output_dir, f"{uid}.dcm")
    with open(path, "wb") as f:
        f.write(event.encoded_dataset())
    return 0x0000


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--ae-title", default="PYNETDICOM")
    parser.add_argument(
        "--transfer-syntax",
        action="append",
        default=[],
        help="transfer syntax UID to accept in addition to pynetdicom's defaults (repeatable)",
    )
    parser.add_argument(
        "--max-pdu",
        type=int,
        default=1048576,
        help="Maximum Length Received in bytes (0 = unlimited)",
    )
    args = parser.parse_args()

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    ae = AE(ae_title=args.ae_title)
    ae.maximum_pdu_size = args.max_pdu
    ae.maximum_associations = 64
    for context in AllStoragePresentationContexts:
        syntaxes = list(context.transfer_syntax)
        for uid in args.transfer_syntax:
            if uid not in syntaxes:
                syntaxes.append(uid)
        ae.add_supported_context(context.abstract_syntax, syntaxes)

    # SIGTERM stops the server thread and exits 0.
    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    handlers = [(evt.EVT_C_STORE, handle_store, [args.output_dir])]
    server = ae.start_server(("127.0.0.1", args.port), block=False, evt_handlers=handlers)
    print(f"pynetdicom_scp: listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    try:
        signal.pause()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
