# Tests for data.toolgate.deployment.settings.roles_from: where the subject's
# roles come from (deployment data, verified token claims, or both).
package toolgate.tests.roles

import rego.v1

job := {"id": "job_1", "purpose": "support_triage", "customer_id": "cust_1"}

# A request as toolgate hands it over in identity mode jwt: the token's roles
# claim is under verified.subject.claims.roles.
jwt_req(who, tool, args, roles) := {
	"request": {
		"subject": {"type": "user", "id": who},
		"action": {"name": tool, "properties": {"arguments": args}},
		"resource": {"type": "customer", "id": "cust_1"},
		"context": {"job": job},
	},
	"verified": {
		"agent": {"id": "support-triage"},
		"subject": {"id": who, "method": "jwt", "claims": {"sub": who, "roles": roles}},
		"time_ns": 1700000000000000000,
	},
}

trusted_req(who, tool, roles) := object.union(jwt_req(who, tool, {}, roles), {"verified": {"subject": {"method": "trusted"}}})

with_setting(value) := object.union(data.toolgate.deployment, {"settings": {"roles_from": value}})

decide(inp, roles_from) := d if {
	d := data.toolgate.decision with input as inp with data.toolgate.deployment as with_setting(roles_from)
}

codes(d) := {r.code | some r in d.reasons}

# --- data (the default) ----------------------------------------------------------

test_default_takes_roles_from_data_and_ignores_claims if {
	# carol is a contractor in data; her token claims support_manager
	inp := jwt_req("carol", "refunds.issue", {"amount": 10}, ["support_manager"])
	d := data.toolgate.decision with input as inp
	d.outcome == "deny"
	codes(d) == {"role_not_permitted"}
	d2 := decide(inp, "data")
	codes(d2) == {"role_not_permitted"}
}

test_default_does_not_know_subjects_only_the_idp_knows if {
	d := data.toolgate.decision with input as jwt_req("zoe", "tickets.read", {}, ["support_agent"])
	codes(d) == {"unknown_subject"}
}

test_unknown_setting_falls_back_to_data if {
	d := decide(jwt_req("zoe", "tickets.read", {}, ["support_agent"]), "claim")
	codes(d) == {"unknown_subject"}
	d2 := decide(jwt_req("carol", "refunds.issue", {"amount": 10}, ["support_manager"]), 7)
	codes(d2) == {"role_not_permitted"}
}

# --- claims ----------------------------------------------------------------------

test_claims_take_roles_from_the_token if {
	d := decide(jwt_req("zoe", "tickets.read", {}, ["support_agent"]), "claims")
	d.outcome == "allow"
	codes(d) == {"granted"}
}

test_claims_ignore_data_roles if {
	# alice is a support_agent in data, but her token carries no role
	d := decide(jwt_req("alice", "tickets.read", {}, []), "claims")
	d.outcome == "deny"
	codes(d) == {"role_not_permitted"}
	some r in d.reasons
	r.message == "subject 'alice' (roles: ) may not request 'tickets.read'"
}

test_claims_roles_must_be_strings_in_an_array if {
	d := decide(jwt_req("zoe", "tickets.read", {}, "support_agent"), "claims")
	codes(d) == {"role_not_permitted"}
	d2 := decide(jwt_req("zoe", "tickets.read", {}, [1, {"r": "support_agent"}]), "claims")
	codes(d2) == {"role_not_permitted"}
}

test_claims_need_a_verified_token if {
	# identity mode trusted has no token: claims (had a caller sent any) do not count
	d := decide(trusted_req("zoe", "tickets.read", ["support_agent"]), "claims")
	codes(d) == {"unknown_subject"}
	d2 := decide(trusted_req("alice", "tickets.read", ["support_agent"]), "claims")
	codes(d2) == {"unknown_subject"}
}

test_claims_in_the_request_body_never_count if {
	inp := object.union(jwt_req("zoe", "tickets.read", {}, []), {"request": {"subject": {"properties": {"roles": ["support_agent"]}}}})
	codes(decide(inp, "claims")) == {"role_not_permitted"}
}

# --- both ------------------------------------------------------------------------

test_both_unions_data_and_claims if {
	# carol: contractor (data) + support_manager (token)
	d := decide(jwt_req("carol", "refunds.issue", {"amount": 10}, ["support_manager"]), "both")
	not "role_not_permitted" in codes(d)

	# alice: support_agent from data, no claim needed
	d2 := decide(jwt_req("alice", "tickets.read", {}, []), "both")
	d2.outcome == "allow"

	# zoe: only the IdP knows her
	d3 := decide(jwt_req("zoe", "tickets.read", {}, ["support_agent"]), "both")
	d3.outcome == "allow"
}

test_both_in_trusted_mode_is_data_only if {
	d := decide(trusted_req("alice", "tickets.read", []), "both")
	d.outcome == "allow"
	d2 := decide(trusted_req("zoe", "tickets.read", ["support_agent"]), "both")
	codes(d2) == {"unknown_subject"}
}
