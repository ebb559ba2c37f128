# The web role: the page it would serve, with a greeting that came from a Terraform output.
{ node, ... }:
{
  lab.version = node.vars.version;
  lab.files."web/index.html" = ''
    <p>${node.vars.greeting}: ${node.name} (${node.host}), version ${node.vars.version}</p>
  '';
}
