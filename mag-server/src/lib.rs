//! mag-server: the control plane (SPEC §5). Under construction.
