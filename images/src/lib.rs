//! Container images of Portcullis without a Docker daemon.
//!
//! [`layout`] writes an OCI image layout with one uncompressed layer as a tar archive, every
//! byte a function of its inputs (see [`tar`]): `hack/build-images.sh` runs it through the
//! `oci-image` binary for the operator, the gateway and the `pause` program (the pod sandbox
//! image of the test node, `src/bin/pause.rs`).

pub mod layout;
pub mod tar;
