"""Stand-in GitHub, GitLab and OIDC issuers: the tests' fake providers, also
served by `orgsync dev --demo`. One copy, shipped with the package."""
