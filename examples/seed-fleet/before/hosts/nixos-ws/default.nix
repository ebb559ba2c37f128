# The nixos-ws role before nixherd: the login user is written out here.
{ ... }:
{
  users.users.luck = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
  };
  security.sudo.wheelNeedsPassword = false;
  services.xserver.enable = true;
  services.xserver.desktopManager.xfce.enable = true;
  system.stateVersion = "24.05";
}
