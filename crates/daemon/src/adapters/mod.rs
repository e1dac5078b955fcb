//! Layer 3, the adapters: the JSON API (`api`), the web pages (`web`) and the VCS's policy
//! routes (`vcs`), each thin: extract, call a service, render the answer.

pub mod api;
pub mod vcs;
pub mod web;
