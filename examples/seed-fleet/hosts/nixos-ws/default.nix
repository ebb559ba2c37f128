# The nixos-ws role: a workstation. Its login user and whether it runs a desktop come from the
# inventory (`node.user`, `node.vars.desktop`).
{ lib, node, ... }:
let
  desktop = node.vars.desktop or false;
in
{
  users.users.${node.user} = lib.mkIf (node.user != "root") {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
  };
  security.sudo.wheelNeedsPassword = false;

  services.xserver.enable = desktop;
  services.xserver.desktopManager.xfce.enable = desktop;

  system.stateVersion = "24.05";
}
