output "vpc_id" {
  value = aws_vpc.main.id
}

output "vpc_cidr_block" {
  value = aws_vpc.main.cidr_block
}

output "availability_zones" {
  description = "The zones the deployment spans."
  value       = local.azs
}

output "public_subnet_ids" {
  description = "One public subnet per zone: the load balancer and the NAT gateway only."
  value       = [for az in local.azs : aws_subnet.public[az].id]
}

output "private_subnet_ids" {
  description = "One private subnet per zone: every task."
  value       = [for az in local.azs : aws_subnet.private[az].id]
}

output "nat_public_ips" {
  description = "The addresses outbound calls leave from (for Memberson's and SevenRooms' allow lists)."
  value       = [for nat in aws_eip.nat : nat.public_ip]
}
