// Spark's SSO token generation, as in its integration code (seed 000), unchanged but for where the
// inputs come from. Prints the token. Usage: OPTIO_SHARED_SECRET=... node sso-token.js USER_ID EMAIL FIRST LAST
const jwt = require('jsonwebtoken');

const [sparkUserId, email, firstName, lastName] = process.argv.slice(2);
const student = { email, firstName, lastName };

const token = jwt.sign({
  sub: sparkUserId,
  email: student.email,
  given_name: student.firstName,
  family_name: student.lastName,
  role: 'student',
  exp: Math.floor(Date.now() / 1000) + 600  // 10 minutes
}, process.env.OPTIO_SHARED_SECRET);

console.log(token);
