# toolgate decision core - approval requirements
# When a request needs a human approval (stage supervised, or an approval
# rule's condition on the arguments holds), and whether the approval that
# toolgate verified for this exact request (input.verified.approval)
# satisfies it.
package toolgate

import rego.v1

default_ttl_seconds := t if {
	t := approval_defaults.ttl_seconds
	is_number(t)
} else := 900

single_use_classes := cs if {
	cs := approval_defaults.single_use_classes
	is_array(cs)
} else := ["execute", "admin"]

# One normalised requirement from a rule object (roles, ttl, single use).
requirement(id, rule, message) := {
	"id": id,
	"message": message,
	"approver_roles": rule_roles(rule),
	"ttl_seconds": rule_ttl(rule),
	"single_use": rule_single_use(rule),
}

# No approver roles anywhere: the requirement is unsatisfiable (deny), never skipped.
rule_roles(rule) := {s | some s in rule.approver_roles; is_string(s)} if is_array(rule.approver_roles)

else := {s | rs := approval_defaults.approver_roles; is_array(rs); some s in rs; is_string(s)}

rule_ttl(rule) := rule.ttl_seconds if is_number(rule.ttl_seconds)

else := default_ttl_seconds

rule_single_use(rule) := rule.single_use if is_boolean(rule.single_use)

else := tool_class in single_use_classes

# Stage supervised: every call needs an approval.
approval_requirements contains requirement("stage_supervised", rule, msg) if {
	tool_stage == "supervised"
	rule := supervision
	msg := concat("", ["tool '", tool_name, "' is in supervised stage: every call needs an approval"])
}

supervision := s if {
	s := tool_rule.supervision
	is_object(s)
} else := {} if {
	_ = tool_rule.supervision
} else := approval_defaults

# An approval rule without a condition always applies.
approval_requirements contains requirement(rule_id(rule), rule, msg) if {
	rules := tool_rule.approvals
	is_array(rules)
	some rule in rules
	is_object(rule)
	not has_key(rule, "when")
	msg := concat("", ["tool '", tool_name, "' always needs an approval (rule '", rule_id(rule), "')"])
}

approval_requirements contains requirement(rule_id(rule), rule, msg) if {
	rules := tool_rule.approvals
	is_array(rules)
	some rule in rules
	is_object(rule)
	condition_holds(rule.when)
	msg := concat("", [
		"argument '", rule.when.argument, "' ", condition_text(rule.when),
		" needs an approval (rule '", rule_id(rule), "')",
	])
}

rule_id(rule) := rule.id if is_string(rule.id)

else := "approval"

comparison("gt")

comparison("gte")

comparison("lt")

comparison("lte")

# A condition is {argument, gt|gte|lt|lte: number}; all given comparisons must hold.
condition_holds(w) if {
	v := args[w.argument]
	is_number(v)
	some op, bound in w
	comparison(op)
	is_number(bound)
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
deny_reasons contains {"code": "invalid_arguments", "message": concat("", ["argument '", a, "' must be a number"])} if {
	rules := tool_rule.approvals
	is_array(rules)
	some rule in rules
	a := rule.when.argument
	not number_argument(a)
}

deny_reasons contains {"code": "invalid_configuration", "message": concat("", ["approval rule '", rule_id(rule), "' has no valid condition"])} if {
	rules := tool_rule.approvals
	is_array(rules)
	some rule in rules
	is_object(rule)
	has_key(rule, "when")
	not valid_condition(rule.when)
}

valid_condition(w) if {
	is_string(w.argument)
	some op, bound in w
	comparison(op)
	is_number(bound)
}

# Combined requirement: the approver must satisfy every applicable rule.
required_roles := intersection({r.approver_roles | some r in approval_requirements})

required_ttl_seconds := min({r.ttl_seconds | some r in approval_requirements})

required_single_use if {
	some r in approval_requirements
	r.single_use == true
}

deny_reasons contains {"code": "approval_unsatisfiable", "message": "no approver role satisfies every approval rule that applies"} if {
	count(approval_requirements) > 0
	count(required_roles) == 0
}

# --- the approval toolgate verified for this exact request ---------------------

approval := a if {
	a := input.verified.approval
	is_object(a)
}

approver := a if {
	a := approval.approver
	is_object(a)
} else := {}

approval_problems contains "approval is not in state approved" if not approval.state == "approved"

approval_problems contains "approver holds none of the required roles" if {
	not approver_has_role
}

approver_has_role if {
	rs := approver.roles
	is_array(rs)
	some role in rs
	role in required_roles
}

approval_problems contains "approver has no id" if not approver_has_id

approver_has_id if {
	id := approver.id
	is_string(id)
	id != ""
}

approval_problems contains "approver may not be the initiator or the agent" if approver.id in [subject_id, agent_id]

approval_problems contains "approval has expired" if not unexpired

unexpired if {
	is_number(approval.expires_at_ns)
	approval.expires_at_ns > time_ns
}

approval_problems contains "a single-use approval is required" if {
	required_single_use
	not approval.single_use == true
}

approval_valid if {
	approval
	count(approval_problems) == 0
}
