# toolgate decision core - input and configuration normalisation
# Turns input and data.toolgate.deployment into well-typed values. Values are
# read with plain references: a reference through a missing key or a value of
# the wrong type is undefined, so each value here is either well-typed or
# undefined (never an error), and the decision is defined for any input.
#
# Written for evaluation cost in wasm (docs/policy-authors.md): every rule
# evaluated costs a fraction of a microsecond, so the normalisation uses few
# rules and no as_object/object.get chains. Beware that `not f(x.y)` is
# undefined, not true, when x.y is undefined (OPA evaluates the argument
# first): guard with a rule that has an `else`, or check positively.
package toolgate

import rego.v1

# --- generic helpers ---------------------------------------------------------

has_key(o, k) if _ = o[k]

# --- input -------------------------------------------------------------------

tool_name := n if {
	n := input.request.action.name
	is_string(n)
	n != ""
}

# The arguments, when they are an object ({} when the action carries none;
# arguments of another type are denied in checks.rego).
args := a if {
	a := input.request.action.properties.arguments
	is_object(a)
} else := {}

# The job: context.job with a non-empty string id (no surrounding white
# space, so "job_1 " cannot pass for a fresh job), purpose and customer_id.
# Without an id, job-scoped kill switches, limits and budgets could be dodged
# by leaving it out, so a job without one is no job (missing_job). When
# toolgate verified the job (identity.jwt.job_claim), the request's id equals
# verified.job.id: toolgate refused the request otherwise.
job := j if {
	j := input.request.context.job
	i := j.id
	is_string(i)
	i != ""
	trim_space(i) == i
	p := j.purpose
	is_string(p)
	p != ""
	c := j.customer_id
	is_string(c)
	c != ""
}

agent_id := id if {
	id := input.verified.agent.id
	is_string(id)
	id != ""
}

subject_id := id if {
	id := input.verified.subject.id
	is_string(id)
	id != ""
}

# Time of the decision: toolgate passes it; fall back to the clock.
time_ns := t if {
	t := input.verified.time_ns
	is_number(t)
} else := time.now_ns()

# --- resolved configuration for this request (data.toolgate.deployment) ---------

tool := t if {
	t := data.toolgate.deployment.tools[tool_name]
	is_object(t)
}

tool_class := c if {
	c := tool.class
	permission_class(c)
}

permission_class("read")

permission_class("draft")

permission_class("approve")

permission_class("execute")

permission_class("admin")

tool_stage := s if {
	s := tool.stage
	rollout_stage(s)
}

rollout_stage("disabled")

rollout_stage("shadow")

rollout_stage("draft_only")

rollout_stage("supervised")

rollout_stage("autonomous")

tool_rule := r if {
	r := data.toolgate.deployment.tool_rules[tool_name]
	is_object(r)
} else := {}

agent := a if {
	a := data.toolgate.deployment.agents[agent_id]
	is_object(a)
}

# Where the subject's roles come from (data.toolgate.deployment.settings.roles_from,
# docs/policy-authors.md "Roles from token claims"): "data" (the default, and
# the fallback for any other value) takes them from
# data.toolgate.deployment.users; "claims" from the verified token's roles
# claim (input.verified.subject.claims.roles, identity mode jwt only: toolgate
# fills it after checking the signature); "both" takes the union. Roles never
# come from the request body.
roles_from := s if {
	s := data.toolgate.deployment.settings.roles_from
	roles_source(s)
} else := "data"

roles_source("data")

roles_source("claims")

roles_source("both")

data_user := u if {
	u := data.toolgate.deployment.users[subject_id]
	is_object(u)
}

claim_roles := {r |
	input.verified.subject.method == "jwt"
	rs := input.verified.subject.claims.roles
	is_array(rs)
	some r in rs
	is_string(r)
}

# The subject as a user of this deployment: listed in data (roles_from data or
# both), else, with roles_from claims or both, any subject a verified token
# names (it may still hold no role).
user := u if {
	roles_from != "claims"
	u := data.toolgate.deployment.users[subject_id]
	is_object(u)
} else := {"roles": sort(claim_roles)} if {
	roles_from != "data"
	input.verified.subject.method == "jwt"
	subject_id
}

data_roles := {r | rs := data_user.roles; is_array(rs); some r in rs; is_string(r)}

user_roles := data_roles if {
	roles_from == "data"
} else := claim_roles if {
	roles_from == "claims"
} else := data_roles | claim_roles

approval_defaults := d if {
	d := data.toolgate.deployment.approval_defaults
	is_object(d)
} else := {}
