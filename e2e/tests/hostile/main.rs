//! Requests a hostile or buggy client sends (issue 20): each answered with a clear status on time,
//! and nothing worse: no daemon grown or wedged, no cgroup or process left, no second daemon on a
//! root the first still holds. A module per part of the API they go at.

mod create;
mod exec;
mod requests;
