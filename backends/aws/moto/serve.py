"""moto's server on 127.0.0.1, for the tests and for running como-saga against a local AWS.

    python3 backends/aws/moto/serve.py --port 5055      # needs moto[server] >= 5.1, < 6

It prints `ready` once listening and serves until its standard input closes (the tests hold it
open) or it is interrupted.

It mends one thing in moto before serving: moto's SQS `Queue.delete_message` rebuilds the
queue's list of messages without the lock that `add_message` appends under, so a message sent
while another is being deleted from the same queue can be dropped from the list (or a deleted
one put back). SQS never loses a message it accepted, and a lost request is exactly what the
chaos runs look for, so the tests must not see moto's race as ours. The mend takes the same lock
around the rebuild. `--stock` serves moto unmended (to see the race); `--report-drops FILE`
writes a line for every message a stock rebuild drops although it was not the one deleted.
"""

import argparse
import sys
import threading

from moto.server import ThreadedMotoServer
from moto.sqs import models
from moto.sqs.exceptions import ReceiptHandleIsInvalid


def stock_delete(self, receipt_handle, report=None):
    """moto 5's `Queue.delete_message`, step by step, noting what the rebuild drops."""
    if receipt_handle in self.deleted_messages:
        return
    if not any(m.had_receipt_handle(receipt_handle) for m in self._messages):
        raise ReceiptHandleIsInvalid()
    new_messages = []
    for message in self._messages:
        if message.had_receipt_handle(receipt_handle):
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            continue
        new_messages.append(message)
    if report is not None:
        kept = {id(m) for m in new_messages}
        for m in self._messages:
            if id(m) not in kept and not m.had_receipt_handle(receipt_handle):
                report.write(f"dropped from {self.name}: {m.body[:200]}\n")
                report.flush()
    self._messages = new_messages


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stock", action="store_true", help="serve moto's SQS unmended")
    parser.add_argument("--report-drops", metavar="FILE", help="with --stock: log the drops")
    args = parser.parse_args()

    original = models.Queue.delete_message
    if args.stock:
        report = open(args.report_drops, "a") if args.report_drops else None
        models.Queue.delete_message = lambda q, r: stock_delete(q, r, report)
    else:

        def delete_message(queue, receipt_handle):
            with queue._messages_lock:
                return original(queue, receipt_handle)

        models.Queue.delete_message = delete_message

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    print("ready", flush=True)
    try:
        if sys.stdin.isatty():
            threading.Event().wait()
        else:
            sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
