//! Support for mag-server end-to-end tests.
