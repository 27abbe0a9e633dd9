//! A CNI client that follows the CNI specification: it loads network configuration lists from the
//! configuration directory, finds plugins in the plugin directories, runs ADD, CHECK and DEL with the
//! environment and stdin the spec defines, and parses their results. It knows nothing of pods beyond
//! a container id, a network namespace path and an interface name.
#![deny(unsafe_code)]
