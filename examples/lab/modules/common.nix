# Shared by every node of the lab fleet: the version deployed and a small closure.
{ node, ... }:
{
  lab.version = node.vars.version;
  lab.payload = {
    sharedMB = 1;
    nodeMB = 1;
  };
  # A NixOS option the lab does not know: recorded in config.json, otherwise ignored.
  boot.isContainer = true;
}
