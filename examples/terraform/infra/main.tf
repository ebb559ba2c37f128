# What exists. A real configuration creates VPSes (hcloud_server, aws_instance, ...) and outputs
# their addresses; this one stands for the lab's hosts and has only variables and outputs, so
# `init` and `apply` need nothing downloaded. Written so that Terraform 0.11 (the tests' version),
# Terraform 1.x and OpenTofu all read it: no `type` constraints (their syntax differs), and
# "${...}" around references, which 0.11 needs and later versions accept with a warning.

variable "web_hosts" {
  description = "The web machines: here the lab's ssh_config aliases (lab-N = 127.0.0.1:220N)"
  default     = ["lab-1", "lab-2"]
}

variable "db_port" {
  description = "The db machine's SSH port on 127.0.0.1 (lab-3 of `nixherd lab up`)"
  default     = "2203"
}

variable "db_password" {
  description = "A secret: read by a key's command, never part of nixherd's snapshot"
  default     = "change-me-example-only"
}

# A list of hosts: nodes web-lab-1, web-lab-2 (role name + host).
output "web_hosts" {
  value = "${var.web_hosts}"
}

# A list of objects: node lab-3 on 127.0.0.1 (0.11 writes the port as a string, nixherd reads
# it as the number it spells).
output "db_nodes" {
  value = [
    {
      name = "lab-3"
      host = "127.0.0.1"
      port = "${var.db_port}"
    },
  ]
}

output "greeting" {
  value = "hello from Terraform"
}

output "db_password" {
  value     = "${var.db_password}"
  sensitive = true
}
