# toolgate decision core - approval requirements
# When a request needs a human approval (stage supervised, or an approval
# rule's condition on the arguments holds), and whether the approval that
# toolgate verified for this exact request (input.verified.approval)
# satisfies it.
package toolgate

import rego.v1

default_ttl_seconds := t if {
	t := conf_approval_defaults.ttl_seconds
	is_number(t)
} else := 900

single_use_classes := string_set(conf_approval_defaults.single_use_classes) if {
	is_array(conf_approval_defaults.single_use_classes)
} else := {"execute", "admin"}

# One normalised requirement from a rule object (roles, ttl, single use).
requirement(id, rule, message) := {
	"id": id,
	"message": message,
	"approver_roles": rule_roles(rule),
	"ttl_seconds": rule_ttl(rule),
	"single_use": rule_single_use(rule),
}

# No approver roles anywhere: the requirement is unsatisfiable (deny), never skipped.
rule_roles(rule) := string_set(rule.approver_roles) if is_array(rule.approver_roles)

else := string_set(object.get(conf_approval_defaults, "approver_roles", []))

rule_ttl(rule) := rule.ttl_seconds if is_number(rule.ttl_seconds)

else := default_ttl_seconds

rule_single_use(rule) := rule.single_use if is_boolean(rule.single_use)

else := tool_class in single_use_classes

# Stage supervised: every call needs an approval.
approval_requirements contains requirement("stage_supervised", rule, msg) if {
	tool_stage == "supervised"
	rule := as_object(object.get(tool_rule, "supervision", conf_approval_defaults))
	msg := concat("", ["tool ", q(tool_name), " is in supervised stage: every call needs an approval"])
}

approval_rules := [r | some r in as_array(tool_rule.approvals); is_object(r)]

# An approval rule without a condition always applies.
approval_requirements contains requirement(rule_id(rule), rule, msg) if {
	some rule in approval_rules
	not has_key(rule, "when")
	msg := concat("", ["tool ", q(tool_name), " always needs an approval (rule ", q(rule_id(rule)), ")"])
}

approval_requirements contains requirement(rule_id(rule), rule, msg) if {
	some rule in approval_rules
	condition_holds(rule.when)
	msg := concat("", [
		"argument ", q(rule.when.argument), " ", condition_text(rule.when),
		" needs an approval (rule ", q(rule_id(rule)), ")",
	])
}

rule_id(rule) := rule.id if is_string(rule.id)

else := "approval"

comparisons := {"gt", "gte", "lt", "lte"}

# A condition is {argument, gt|gte|lt|lte: number}; all given comparisons must hold.
condition_holds(w) if {
	v := args[w.argument]
	is_number(v)
	some op in comparisons
	is_number(w[op])
	not condition_fails(w, v)
}

condition_fails(w, v) if {
	is_number(w.gt)
	not v > w.gt
}

condition_fails(w, v) if {
	is_number(w.gte)
	not v >= w.gte
}

condition_fails(w, v) if {
	is_number(w.lt)
	not v < w.lt
}

condition_fails(w, v) if {
	is_number(w.lte)
	not v <= w.lte
}

condition_text(w) := concat(" and ", [t |
	some op in ["gt", "gte", "lt", "lte"]
	is_number(w[op])
	t := concat(" ", [{"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op], num(w[op])])
])

# A condition that cannot be evaluated fails closed.
deny_reasons contains reason("invalid_arguments", concat("", ["argument ", q(a), " must be a number"])) if {
	some rule in approval_rules
	a := rule.when.argument
	not number_argument(a)
}

deny_reasons contains reason("invalid_configuration", concat("", ["approval rule ", q(rule_id(rule)), " has no valid condition"])) if {
	some rule in approval_rules
	has_key(rule, "when")
	not valid_condition(rule.when)
}

valid_condition(w) if {
	is_string(w.argument)
	some op in comparisons
	is_number(w[op])
}

approval_needed if count(approval_requirements) > 0

# Combined requirement: the approver must satisfy every applicable rule.
required_roles := intersection({r.approver_roles | some r in approval_requirements})

required_ttl_seconds := min({r.ttl_seconds | some r in approval_requirements})

required_single_use if {
	some r in approval_requirements
	r.single_use == true
}

approval_exclude := [subject_id, agent_id]

deny_reasons contains reason("approval_unsatisfiable", "no approver role satisfies every approval rule that applies") if {
	approval_needed
	count(required_roles) == 0
}

# --- the approval toolgate verified for this exact request ---------------------

approval := as_object(ver.approval)

approver := as_object(approval.approver)

approval_problems contains "approval is not in state approved" if not approval.state == "approved"

approval_problems contains "approver holds none of the required roles" if {
	not approver_has_role
}

approver_has_role if {
	some role in as_array(approver.roles)
	role in required_roles
}

approval_problems contains "approver has no id" if not approver_has_id

approver_has_id if non_empty_string(approver.id)

approval_problems contains "approver may not be the initiator or the agent" if approver.id in approval_exclude

approval_problems contains "approval has expired" if not unexpired

unexpired if {
	is_number(approval.expires_at_ns)
	approval.expires_at_ns > time_ns
}

approval_problems contains "a single-use approval is required" if {
	required_single_use
	not approval.single_use == true
}

approval_present if is_object(ver.approval)

approval_valid if {
	approval_present
	count(approval_problems) == 0
}
