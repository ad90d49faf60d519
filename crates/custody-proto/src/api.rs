//! HTTP API bodies; filled in with the server.
