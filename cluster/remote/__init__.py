"""Services for machines outside the Ray cluster, over gRPC: the wire format (`wire`), the
on-device latency server (`device`) and the ask/tell study service (`service`). No ray."""
