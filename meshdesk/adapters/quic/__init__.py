"""The mesh over QUIC (aioquic): the control plane (`transport`) and data streams on its
connections (`streams`)."""
