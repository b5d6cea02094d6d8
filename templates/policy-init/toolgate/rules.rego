# Rules of this deployment, added to toolgate's library.
# This file is in the library's package: a rule here may read what the
# library resolved (tool_name, args, job, user_roles, ...) and add deny
# reasons. The library's contract (docs/policy-contract.md) is unchanged:
# any deny reason denies, whatever else the request has.
package toolgate

import rego.v1

# Example: refunds are paid out only in the currencies this deployment uses.
deny_reasons contains {"code": "invalid_arguments", "message": msg} if {
	tool_name == "refunds.issue"
	c := args.currency
	is_string(c)
	not refund_currency(c)
	msg := concat("", ["currency '", c, "' is not one this deployment refunds in"])
}

refund_currency("EUR")

refund_currency("USD")
