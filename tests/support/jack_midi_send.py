"""A MIDI controller for the MIDI tests: a JACK client with one MIDI output, in a process of its own.

    python tests/support/jack_midi_send.py NAME DEST SERVER

Prints "ready" once its port is connected to DEST, then writes each stdin line (a MIDI message in hex) in
the next process cycle, through JACK's own MIDI path; exits at the end of stdin. Its own process, because a
Python process callback in the test's process, closed while the test's threads run, once left every thread
there waiting for a GIL no one held.
"""

from __future__ import annotations

import queue
import sys
import time

import jack


def main() -> None:
    name, dest, server = sys.argv[1], sys.argv[2], sys.argv[3]
    client = jack.Client(name, no_start_server=True, servername=server)
    port = client.midi_outports.register("out")
    pending: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def process(frames: int) -> None:
        port.clear_buffer()
        for offset in range(frames):
            try:
                port.write_midi_event(offset, pending.get_nowait())
            except queue.Empty:
                break

    client.set_process_callback(process)
    client.activate()
    client.connect(port, dest)
    end = time.monotonic() + 5.0  # the graph changes a cycle or two later; events before that are lost
    while not client.get_all_connections(port) and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.05)
    print("ready" if client.get_all_connections(port) else f"not connected to {dest}", flush=True)
    for line in sys.stdin:
        if line.strip():
            pending.put(bytes.fromhex(line.strip()))
    time.sleep(0.1)  # the last cycle takes what is queued
    client.deactivate()
    client.close()


if __name__ == "__main__":
    main()
