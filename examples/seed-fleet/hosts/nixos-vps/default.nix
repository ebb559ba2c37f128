# The nixos-vps role: a small server. What differs per node comes from the inventory as `node`
# (a special argument): its vars, tags, host, user, ...
{ lib, node, ... }:
let
  vars = node.vars;
  nginx = vars.nginx or false;
  domains = vars.domains or [ ];
in
{
  services.openssh.enable = true;
  time.timeZone = vars.timeZone or "UTC";

  services.nginx = lib.mkIf nginx {
    enable = true;
    virtualHosts = lib.genAttrs domains (domain: {
      root = "/var/www/${domain}";
    });
  };
  networking.firewall.allowedTCPPorts = [ 22 ] ++ lib.optionals nginx [ 80 443 ];

  system.stateVersion = "24.05";
}
