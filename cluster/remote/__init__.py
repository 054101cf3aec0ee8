"""Services for machines outside the Ray cluster, over gRPC: the wire format (`wire`), the
on-device latency server (`device`) and its clients (`device_client`), the ask/tell study
service (`service`) and its client (`service_client`). No ray."""
