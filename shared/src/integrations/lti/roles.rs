//! LMS roles onto ours (seed 004): Instructor → teacher, Learner → student, Administrator → admin
//! level, Mentor → observer; anything unknown → student, the least privileged course participant.
//! Admin level means an institution's or the system's administrator, and an organization admin at most
//! (provisioning caps it, and sets it only when it creates an account); a course's Administrator role
//! administers that course only: a teacher.
//!
//! Roles come as full URIs (`http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor`), as short
//! values (`Instructor`), or as values nobody defined; none breaks a launch. The course's own roles
//! (context `membership#...` and short values) decide before institution and system roles: a student
//! whose institution also lists them as a mentor is a student in this course. Among several roles of one
//! kind the most privileged wins (an Instructor who is also a Learner teaches).

use crate::domain::auth::Role;
pub use crate::store::lti::CourseRole;

/// What a launch's roles make of the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedRole {
    /// The role of an account this launch creates (an existing account keeps its own).
    pub role: Role,
    /// The user is a Mentor: `role_scope_mentor` names the students they follow.
    pub mentor: bool,
}

impl MappedRole {
    /// The person's role in the launch's course.
    pub fn course_role(self) -> CourseRole {
        match self.role {
            Role::Teacher | Role::OrgAdmin | Role::Admin => CourseRole::Instructor,
            _ if self.mentor || self.role == Role::Observer => CourseRole::Mentor,
            _ => CourseRole::Learner,
        }
    }
}

const MEMBERSHIP: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership";
const INSTITUTION: &str = "http://purl.imsglobal.org/vocab/lis/v2/institution/person#";
const SYSTEM: &str = "http://purl.imsglobal.org/vocab/lis/v2/system/person#";

/// Our role for one LMS role value, and whether it is a course (context) role.
fn one(value: &str) -> Option<(Role, bool)> {
    let value = value.trim();
    // Context roles: `membership#Instructor`, sub-roles `membership/Instructor#TeachingAssistant`, short values.
    let context = value
        .strip_prefix(MEMBERSHIP)
        .and_then(|rest| rest.strip_prefix('#').or_else(|| rest.strip_prefix('/')))
        .or_else(|| (!value.contains(':')).then_some(value));
    if let Some(name) = context {
        let principal = name.split('#').next().unwrap_or(name);
        return match principal {
            "Administrator" | "Instructor" | "TeachingAssistant" => Some((Role::Teacher, true)),
            "Learner" => Some((Role::Student, true)),
            "Mentor" => Some((Role::Observer, true)),
            _ => None,
        };
    }
    if let Some(name) = value.strip_prefix(INSTITUTION) {
        return match name {
            "Administrator" => Some((Role::OrgAdmin, false)),
            "Faculty" | "Instructor" => Some((Role::Teacher, false)),
            "Student" | "Learner" => Some((Role::Student, false)),
            "Mentor" | "Guardian" => Some((Role::Observer, false)),
            _ => None,
        };
    }
    match value.strip_prefix(SYSTEM)? {
        "Administrator" | "SysAdmin" => Some((Role::OrgAdmin, false)),
        _ => None,
    }
}

/// How much a role may do, for "the most privileged wins" (an observer follows, a student takes part).
fn rank(role: Role) -> u8 {
    match role {
        Role::Observer => 0,
        Role::Student => 1,
        Role::Teacher => 2,
        Role::OrgAdmin => 3,
        Role::Admin => 4,
    }
}

pub fn map_roles(values: &[String]) -> MappedRole {
    let known: Vec<(Role, bool)> = values.iter().filter_map(|v| one(v)).collect();
    let mentor = known.iter().any(|(role, _)| *role == Role::Observer);
    let best = |context: bool| known.iter().filter(|(_, c)| *c == context).map(|(r, _)| *r).max_by_key(|r| rank(*r));
    let role = best(true).or_else(|| best(false)).unwrap_or(Role::Student);
    MappedRole { role, mentor: mentor && role == Role::Observer }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(values: &[&str]) -> Role {
        map_roles(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()).role
    }

    #[test]
    fn lms_roles_map_onto_ours_with_course_roles_first_and_least_privilege_for_the_unknown() {
        let m = |r: &str| format!("{MEMBERSHIP}#{r}");
        assert_eq!(map(&[&m("Instructor")]), Role::Teacher);
        assert_eq!(map(&[&m("Learner")]), Role::Student);
        assert_eq!(map(&[&m("Administrator")]), Role::Teacher, "a course's administrator teaches it");
        assert_eq!(map(&[&format!("{INSTITUTION}Administrator")]), Role::OrgAdmin);
        assert_eq!(map(&[&format!("{MEMBERSHIP}Administrator")]), Role::Student, "no separator: not a role we know");
        assert_eq!(map(&["Instructor"]), Role::Teacher, "short values");
        assert_eq!(map(&["Learner"]), Role::Student);
        assert_eq!(map(&[&format!("{MEMBERSHIP}/Instructor#TeachingAssistant")]), Role::Teacher);
        assert_eq!(map(&["http://purl.imsglobal.org/vocab/lis/v2/unknown/unknown#Helper"]), Role::Student);
        assert_eq!(map(&[""]), Role::Student, "an empty role");
        assert_eq!(map(&[]), Role::Student);
        // The certification's multi-role launches: the course role decides.
        let student = [m("Learner"), format!("{INSTITUTION}Student"), format!("{INSTITUTION}Mentor")];
        assert_eq!(map_roles(&student).role, Role::Student);
        assert!(!map_roles(&student).mentor, "a student is not made an observer by an institution role");
        assert_eq!(
            map(&[&m("Instructor"), &format!("{INSTITUTION}Staff"), &format!("{INSTITUTION}Other")]),
            Role::Teacher
        );
        assert_eq!(map(&[&m("Learner"), &m("Instructor")]), Role::Teacher, "the most privileged course role");
        let mentor = map_roles(&[m("Mentor")]);
        assert_eq!((mentor.role, mentor.mentor), (Role::Observer, true));
        assert_eq!(
            map(&[&format!("{INSTITUTION}Faculty")]),
            Role::Teacher,
            "institution roles when the course says nothing"
        );
        assert_eq!(map(&[&format!("{SYSTEM}SysAdmin")]), Role::OrgAdmin);
    }
}
