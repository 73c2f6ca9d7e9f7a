"""The API dialects the limiter speaks; the registry (`limiter.relay.registry`) says where."""
