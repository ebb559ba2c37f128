# The nixos-vps role before nixherd: what differs per machine is keyed by the node's name (the
# `name` argument Colmena gives every module), inside the module.
{ lib, name, ... }:
let
  perNode = {
    nixos-hk = {
      nginx = true;
      domains = [ "hk.example.com" ];
    };
    nixos-vps-198-51-100-13.timeZone = "Asia/Hong_Kong";
  };
  mine = perNode.${name} or { };
  nginx = mine.nginx or false;
in
{
  services.openssh.enable = true;
  time.timeZone = mine.timeZone or "UTC";
  services.nginx = lib.mkIf nginx {
    enable = true;
    virtualHosts = lib.genAttrs (mine.domains or [ ]) (domain: {
      root = "/var/www/${domain}";
    });
  };
  networking.firewall.allowedTCPPorts = [ 22 ] ++ lib.optionals nginx [ 80 443 ];
  system.stateVersion = "24.05";
}
