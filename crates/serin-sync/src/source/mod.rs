//! The GitRepository side: which reference to fetch and how its revision is written
//! (`revision`), Git through the system `git` (`git`), ignore rules (`ignore`) and the local
//! artifact storage (`storage`).

pub mod git;
pub mod gix_backend;
pub mod ignore;
pub mod revision;
pub mod storage;
