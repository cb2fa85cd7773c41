"""Stand-ins for the AWS services moto does not run (Lambda, EventBridge, SSM's agent, Auto Scaling's
instances) and the parts of moto's gaps that `localcloud.moto_gaps` applies."""
