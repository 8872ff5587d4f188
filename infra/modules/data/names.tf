# Every resource name, by the same rules as backends/aws/src/names.rs: the prefix, a dash, the
# resource's own name (secrets: the prefix, a slash, the name). The test
# backends/aws/tests/names.rs reads this file and compares it with the backend's constants, and
# infra/tests/test_terraform.py checks that the resources take their names from here, so that
# `como-saga infra bootstrap` and this Terraform cannot drift apart. Other files use these
# locals only.
#
# The data keys' secret (`<prefix>/data-keys`: the keyring that seals the guests' contact
# details) is named by the application (app/src/stack.rs DATA_KEYS_SECRET), not by names.rs's
# SECRETS, which `infra bootstrap` creates and seeds: it is one more secret of local.secret, but
# not of secret_names (infra/tests/test_terraform.py checks it against app/src/stack.rs).
locals {
  queue_names             = ["requests", "replies", "commands-crm", "commands-sevenrooms", "notifications"]
  dlq_suffix              = "-dlq"
  table                   = "sagas"
  status_index            = "by-status"
  due_index               = "by-due"
  ttl_attribute           = "expires_at"
  status_index_projection = []
  due_index_projection    = []
  bus                     = "bus"
  booking_rule            = "booking-requested"
  booking_target_id       = "requests-queue"
  booking_source          = "como.booking"
  booking_detail_type     = "BookingRequested"
  event_source            = "como.saga"
  secret_names            = ["memberson-token", "memberson-credentials", "sevenrooms-credentials"]
  data_keys_secret        = "data-keys"
  all_secret_names        = concat(local.secret_names, [local.data_keys_secret])
  roles                   = ["orchestrator", "worker-crm", "worker-sevenrooms"]

  queue      = { for q in local.queue_names : q => "${var.prefix}-${q}" }
  dlq        = { for q in local.queue_names : q => "${var.prefix}-${q}${local.dlq_suffix}" }
  table_name = "${var.prefix}-${local.table}"
  bus_name   = "${var.prefix}-${local.bus}"
  rule_name  = "${var.prefix}-${local.booking_rule}"
  secret     = { for s in local.all_secret_names : s => "${var.prefix}/${s}" }
}
