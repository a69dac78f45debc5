"""MQTT output: availability, events, state and stats under `<prefix>/<device_id>/`.

Topics (docs/mqtt.md):
  availability  retained `online` on every connect, `offline` as Last Will (unclean death),
                `stopped` on a clean shutdown
  events        one JSON object per emotion event, QoS 1 (not retained)
  state         retained snapshot of the faces on screen (latest wins)
  stats         retained runtime figures (latest wins)
  timeline      per-face smoothed probabilities at `timeline_interval_s` (spooled like events)
  homeassistant discovery configs under `ha_prefix` when `ha_discovery` is on
                (`emotion_edge.publish.homeassistant`)

Delivery guarantee for events: **at least once, with ids**. Every event carries a unique
`event_id`; it is written to an on-disk spool (`emotion_edge.publish.spool`) before it is handed to
paho and deleted only when the broker's PUBACK arrives. Events produced while the broker is
unreachable wait in the spool and are sent after reconnect, oldest first; events that were
in flight when the connection dropped are re-sent, so a consumer may see an id twice and
should de-duplicate on `event_id`. The spool survives a daemon restart. It is bounded: past
`spool_max_events` the oldest events are dropped, counted in `stats()["spool_dropped"]` and
logged as a WARNING (the first at once, later ones summarized once a minute).

Storage faults (a full or failing disk) never stop delivery: an event that cannot be written
waits in a bounded memory queue (`memory_queue_events`), is sent from there while the broker
is up, and moves to the spool once it is writable again (retried with backoff); the fault is
one ERROR naming the spool file and the error, and `stats()["storage_error"]`. A spool file
that is not a database is renamed aside (`*.corrupt-<time>`) and a fresh one started. Every
event is accounted for at every moment (`ledger()`):

    created + carried over = delivered + rejected + dropped + queued (spool + memory)

MQTT 5 (the default, `protocol = "5"`): each PUBACK's reason code is checked, so an event the
broker refuses (an ACL that denies the topic, a quota, the payload format) is counted as
rejected with one ERROR naming the topic and the reason, never as delivered; a quota refusal
is retried later. A broker that hands our session to another client with the same client id
(reason 0x8E: two devices with one device id) gets one ERROR with the fix and a long backoff
instead of a reconnect fight. With `protocol = "3.1.1"` brokers acknowledge publishes they
refuse, so such events count as delivered and are lost, and a takeover looks like any other
disconnect.

A PUBACK with reason 0x10 ("no matching subscribers") means the broker took the event and
handed it to nobody: no recorder is subscribed (a broker without persistence that restarted
forgets the recorder's persistent session until the recorder reconnects). By default that
counts as delivered (`acked_no_subscriber` counts them); with `require_subscriber = true` the
event stays in the spool and is sent again, one at a time with a doubling pause, until a
subscriber takes it (`waiting_for_subscriber`). docs/mqtt.md says what the broker's settings
mean for loss.

State and stats are not spooled: only the latest of each matters, and it is re-published on
every (re)connect.

The package, one class per concern (Frigate's `comms/` is the model), all sharing one lock so
the figures are consistent with each other at every moment:

  publisher.py  `MqttPublisher`, the facade the pipeline calls, and the sender thread
  client.py     `PahoConnection`: the paho client, (re)connects, errors, takeover detection
  sender.py     `SpoolSender`: queued events to paho within a window, PUBACKs to deletions
  storage.py    `SpoolStorage`: the spool, and memory while the disk fails
  ledger.py     `DeliveryLedger`: counters, current errors, drop and refusal log lines
  timeline.py   `TimelineSender`: timeline samples, spooled on their own
"""

from emotion_edge.publish.mqtt.client import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    AVAILABILITY_STOPPED,
)
from emotion_edge.publish.mqtt.publisher import SENDER_STUCK_S, MqttPublisher

__all__ = [
    "AVAILABILITY_OFFLINE",
    "AVAILABILITY_ONLINE",
    "AVAILABILITY_STOPPED",
    "SENDER_STUCK_S",
    "MqttPublisher",
]
