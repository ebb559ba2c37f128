# The db role: a stand-in database listening on the node's `db_port`, and its config file.
{ node, lib, ... }:
{
  lab.service = {
    port = node.vars.db_port;
    command = "exec python3 -m http.server --bind 127.0.0.1 \"$PORT\" --directory /nix/var/lab/etc";
  };
  lab.files."db/db.conf" = lib.mkDefault ''
    listen = 127.0.0.1:${toString node.vars.db_port}
    name = ${node.name}
  '';
}
