# The db role: its config file. The password is a key (/run/keys/db-password), not in the store.
{ node, ... }:
{
  lab.version = node.vars.version;
  lab.files."db/db.conf" = ''
    name = ${node.name}
    password_file = /run/keys/db-password
  '';
}
