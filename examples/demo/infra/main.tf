# Only built-in providers: runs offline.
terraform {
  required_version = ">= 1.4"
}

resource "terraform_data" "release" {
  input = "web-v1"
}

output "release" {
  value = terraform_data.release.output
}
