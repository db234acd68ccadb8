//! The controllers the CLI can drive, each through its front end's test
//! driver (a guest that speaks only the controller's own protocol).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use vmstor_hostio::{Disk, GuestDriver};

/// A controller the CLI drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// Legacy IDE (PIIX) with an ATA disk.
    Ide,
    /// virtio-scsi with a SCSI disk.
    Scsi,
    /// virtio-blk.
    VirtioBlk,
    /// No controller: guest operations go straight to the engine.
    Engine,
}

impl Controller {
    /// The controllers available in this build, in table order.
    pub fn available() -> Vec<Controller> {
        vec![Controller::Ide, Controller::Scsi, Controller::VirtioBlk]
    }

    /// Every controller name accepted on the command line.
    pub const ACCEPTED: &'static str = "ide, scsi, virtio-blk, engine";

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Ide => "ide",
            Controller::Scsi => "scsi",
            Controller::VirtioBlk => "virtio-blk",
            Controller::Engine => "engine",
        }
    }

    /// Builds a driver (and the device under it) over `disk`.
    pub fn driver(self, disk: Arc<Disk>) -> Result<Box<dyn GuestDriver>, String> {
        match self {
            Controller::VirtioBlk => {
                let g = vmstor_virtio_blk::testing::TestGuest::new(disk, Default::default())?;
                Ok(Box::new(g))
            }
            Controller::Engine => Ok(Box::new(vmstor_hostio::crash::EngineDriver::new(disk))),
            Controller::Ide => Ok(Box::new(vmstor_ata::testing::IdeDriver::new(disk))),
            Controller::Scsi => Ok(Box::new(
                vmstor_virtio_scsi::testing::TestInitiator::with_disk(disk),
            )),
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Controller {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ide" => Ok(Controller::Ide),
            "scsi" | "virtio-scsi" => Ok(Controller::Scsi),
            "virtio-blk" | "virtio" => Ok(Controller::VirtioBlk),
            "engine" => Ok(Controller::Engine),
            _ => Err(format!(
                "unknown controller {s:?}: expected one of {}",
                Controller::ACCEPTED
            )),
        }
    }
}
