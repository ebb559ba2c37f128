# The web role: an HTTP responder on the node's `http_port`, and the page it would serve.
{ node, ... }:
{
  lab.service.port = node.vars.http_port;
  lab.files."web/index.html" = ''
    <p>${node.vars.greeting}: ${node.name}, version ${node.vars.version}</p>
  '';
}
