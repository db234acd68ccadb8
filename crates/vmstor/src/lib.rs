//! Library side of the `vmstor` tool: the controller registry (each front
//! end's guest driver behind one name) and the trace script language, shared
//! by the CLI and the workspace-level crash and fault tests.

pub mod controllers;
pub mod script;
