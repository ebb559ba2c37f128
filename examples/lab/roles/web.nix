# The web role: an HTTP responder on the node's `http_port`, and the page it would serve.
{ node, ... }:
{
  lab.service.port = node.vars.http_port;
  # The responder is the unit app.service; a new version reloads it (SIGHUP: it re-reads the
  # running system) instead of restarting it, as `reloadIfChanged` does on NixOS.
  systemd.services.app.reloadIfChanged = true;
  lab.files."web/index.html" = ''
    <p>${node.vars.greeting}: ${node.name}, version ${node.vars.version}</p>
  '';
}
