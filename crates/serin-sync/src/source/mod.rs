//! The sources: for GitRepository, which reference to fetch and how its revision is written
//! (`revision`), Git through the system `git` (`git`), ignore rules (`ignore`) and the local
//! artifact storage (`storage`); for HelmRepository and HelmChart, the repository index and its
//! semver ranges (`helm_index`).

pub mod git;
pub mod gix_backend;
pub mod helm_index;
pub mod ignore;
pub mod revision;
pub mod storage;
