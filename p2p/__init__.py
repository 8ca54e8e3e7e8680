"""MicroCash peer-to-peer layer: framing, messages, peers, headers-first sync, gossip.

SPEC §11 over trio TCP. The package knows blocks, headers and transactions only as
canonical msgpack bytes plus their hashes; everything else about the chain comes from
the node through the `p2p.interface.ChainAccess` protocol. The node runs one
`p2p.network.Network` in its nursery.

Modules: `interface` (node contract), `errors`, `framing` (length-prefixed frames, the
envelope head read by hand), `decode` (per-type bounded payload decoding), `messages`
(payload shapes, limits and builders), `peer` (per-connection state and send buffer
bounded in bytes), `download` (the Network-wide block download scheduler), `eviction`
(which inbound peer to drop when full), `addrbook` (addresses learned from `addr`),
`bans`, `session` (one peer's protocol), `network` (listener, dialers, slots, scores,
gossip).
"""
