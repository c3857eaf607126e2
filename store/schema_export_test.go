package store

// Migrations returns the schema migrations, for the shipped-migration check.
func Migrations() []string { return migrations }
