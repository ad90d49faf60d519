//! The `custody` command as operators run it, its agent as a process, and the tidy checks that
//! hold the house's shape, as one test binary with a module per concern.

mod agent_process;
mod cli;
mod keys;
mod tidy;
