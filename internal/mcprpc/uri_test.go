package mcprpc

import "testing"

func TestNormalizeURI(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"already_normal", "https://example.com/a/b?x=1#f", "https://example.com/a/b?x=1#f"},
		{"scheme_and_host_lowercased", "HTTPS://Example.COM/Path", "https://example.com/Path"},
		{"userinfo_and_port_kept", "http://User:PW@Example.com:8080/x", "http://User:PW@example.com:8080/x"},
		{"ipv6_host_lowercased", "http://[2001:DB8::1]/", "http://[2001:db8::1]/"},
		{"path_case_kept", "file:///Srv/Docs", "file:///Srv/Docs"},
		{"unreserved_decoded", "http://h/%7Euser/%41%2d%5F", "http://h/~user/A-_"},
		{"reserved_uppercased", "http://h/a%2fb%3a", "http://h/a%2Fb%3A"},
		{"percent_in_host", "http://%45xample.com/", "http://example.com/"},
		{"reserved_escape_in_host_upper", "http://a%2eb%2c.com/", "http://a.b%2C.com/"},
		{"dot_segments", "http://h/a/b/c/./../../g", "http://h/a/g"},
		{"rfc3986_example", "mid/content=5/../6", "mid/6"},
		{"leading_dotdot_absolute", "http://h/../../etc/passwd", "http://h/etc/passwd"},
		{"encoded_dotdot", "file:///srv/public/%2e%2E/secret", "file:///srv/secret"},
		{"encoded_slash_not_a_segment", "file:///srv/public/..%2Fsecret", "file:///srv/public/..%2Fsecret"},
		{"trailing_dot", "http://h/a/.", "http://h/a/"},
		{"trailing_dotdot", "http://h/a/b/..", "http://h/a/"},
		{"dot_in_name_kept", "file:///a/.hidden/b..c", "file:///a/.hidden/b..c"},
		{"query_fragment_kept", "http://h/a/../b?q=/../x#/./y", "http://h/b?q=/../x#/./y"},
		{"query_escapes_normalized", "http://h/?q=%7e%2f", "http://h/?q=~%2F"},
		{"no_authority_scheme_lowercased", "URN:ISBN:0451450523", "urn:ISBN:0451450523"},
		{"custom_scheme_relative_dots", "mem:public/../secret", "mem:secret"},
		{"empty_host", "file:///x/./y", "file:///x/y"},
		{"no_scheme", "Docs/./A", "Docs/A"},
		{"malformed_escape_unchanged", "HTTP://H/%zz/../x", "HTTP://H/%zz/../x"},
		{"truncated_escape_unchanged", "http://h/%4", "http://h/%4"},
		{"truncated_escape_end_unchanged", "http://h/a%", "http://h/a%"},
		{"template_braces_kept", "file:///{path}", "file:///{path}"},
		{"non_ascii_kept", "file:///café/../é", "file:///é"},
		{"scheme_must_start_with_letter", "1http://H/", "1http://H/"},
		{"dots_would_create_authority_unchanged", "file:/..//evil.example/x", "file:/..//evil.example/x"},
		{"dots_would_create_scheme_unchanged", "x/../javascript:alert", "x/../javascript:alert"},
		{"decoding_would_create_scheme_unchanged", "%61:b", "%61:b"},
		{"rooted_path_without_authority", "file:/a/../b", "file:/b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NormalizeURI(tc.in)
			if got != tc.want {
				t.Errorf("NormalizeURI(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again := NormalizeURI(got); again != got {
				t.Errorf("NormalizeURI not idempotent: NormalizeURI(%q) = %q", got, again)
			}
		})
	}
}

func TestNormalizeURIUnchangedDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	s := "https://example.com/a/b"
	// One allocation for the work buffer; the input is returned as is.
	if n := testing.AllocsPerRun(100, func() { _ = NormalizeURI(s) }); n > 1 {
		t.Errorf("NormalizeURI(%q) allocates %v times, want <= 1", s, n)
	}
}
