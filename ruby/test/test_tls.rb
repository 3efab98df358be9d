require_relative 'helper'
require 'openssl'
require 'fileutils'

# TLS through the Ruby layer's start_tls, with certificates made here.
class TestTls < Test::Unit::TestCase
  include LibemTest

  DIR = Dir.mktmpdir('libem-tls')
  OWNER = Process.pid
  at_exit { FileUtils.rm_rf(DIR) if Process.pid == OWNER } # not in the fork tests' children

  def self.key
    OpenSSL::PKey::RSA.new(2048)
  end

  def self.cert(name, key, issuer_cert, issuer_key, ca: false)
    c = OpenSSL::X509::Certificate.new
    c.version = 2
    c.serial = rand(1 << 32)
    c.subject = OpenSSL::X509::Name.parse("/CN=#{name}")
    c.issuer = issuer_cert ? issuer_cert.subject : c.subject
    c.public_key = key.public_key
    c.not_before = Time.now - 60
    c.not_after = Time.now + 3600
    ef = OpenSSL::X509::ExtensionFactory.new(issuer_cert || c, c)
    if ca
      c.add_extension(ef.create_extension('basicConstraints', 'CA:TRUE', true))
      c.add_extension(ef.create_extension('keyUsage', 'keyCertSign,cRLSign', true))
    else
      c.add_extension(ef.create_extension('subjectAltName', "DNS:#{name},IP:127.0.0.1"))
    end
    c.sign(issuer_key, OpenSSL::Digest.new('SHA256'))
    c
  end

  CA_KEY = key
  CA = cert('libem test CA', CA_KEY, nil, CA_KEY, ca: true)
  SERVER_KEY = key
  SERVER = cert('localhost', SERVER_KEY, CA, CA_KEY)
  CLIENT_KEY = key
  CLIENT = cert('client', CLIENT_KEY, CA, CA_KEY)
  { 'ca.crt' => CA.to_pem, 'server.key' => SERVER_KEY.to_pem, 'server.crt' => SERVER.to_pem,
    'client.key' => CLIENT_KEY.to_pem, 'client.crt' => CLIENT.to_pem }.each do |f, pem|
    File.write(File.join(DIR, f), pem)
  end

  def server_tls(extra = {})
    { private_key_file: File.join(DIR, 'server.key'), cert_chain_file: File.join(DIR, 'server.crt') }.merge(extra)
  end

  # A TLS echo server and a client; returns what the block's hooks saw.
  def tls_pair(server_opts, client_opts, client_hooks = {})
    port = free_port
    seen = { server: {}, client: {} }
    sopts = server_opts
    server = Module.new do
      define_method(:post_init) { start_tls(sopts) }
      define_method(:ssl_handshake_completed) do
        seen[:server][:handshake] = true
        seen[:server][:sni] = get_sni_hostname
        seen[:server][:peer_cert] = get_peer_cert
      end
      define_method(:ssl_verify_peer) { |pem| (seen[:server][:verified] ||= []) << pem; true }
      define_method(:receive_data) { |d| send_data(d) }
    end
    copts = client_opts
    hooks = client_hooks
    client = Module.new do
      define_method(:connection_completed) { start_tls(copts) }
      define_method(:ssl_verify_peer) do |pem|
        (seen[:client][:verified] ||= []) << pem
        hooks.fetch(:verify, true)
      end
      define_method(:ssl_handshake_completed) do
        seen[:client][:handshake] = true
        seen[:client][:peer_cert] = get_peer_cert
        seen[:client][:cipher] = get_cipher_name
        seen[:client][:protocol] = get_cipher_protocol
        seen[:client][:bits] = get_cipher_bits
        send_data('secret')
      end
      define_method(:receive_data) { |d| (seen[:client][:data] ||= +'') << d; close_connection if seen[:client][:data] == 'secret' }
      define_method(:unbind) { |r = nil| seen[:client][:reason] = r; EM.stop }
    end
    em do
      EM.start_server('127.0.0.1', port, server)
      EM.connect('127.0.0.1', port, client)
    end
    seen
  end

  def test_ssl_is_available
    assert_true(EM.ssl?)
  end

  def test_start_tls_without_verify_peer_verifies_nothing
    seen = tls_pair(server_tls, {})
    assert_true(seen[:client][:handshake])
    assert_true(seen[:server][:handshake])
    assert_nil(seen[:client][:verified]) # stock asks nothing without verify_peer
    assert_equal('secret', seen[:client][:data])
    assert_equal(SERVER.to_pem, seen[:client][:peer_cert])
    assert_match(/TLSv1\.[23]/, seen[:client][:protocol])
    assert_kind_of(String, seen[:client][:cipher])
    assert_operator(seen[:client][:bits], :>=, 128)
    assert_nil(seen[:client][:reason])
  end

  # Stock's server falls back to a built-in certificate; libem's extension
  # makes one for the process.
  def test_server_without_certificate_uses_a_default_one
    seen = tls_pair({}, { verify_peer: true })
    assert_true(seen[:server][:handshake])
    assert_equal('secret', seen[:client][:data])
    cert = OpenSSL::X509::Certificate.new(seen[:client][:peer_cert])
    assert_equal(cert.subject, cert.issuer) # self-signed
    assert_true(cert.verify(cert.public_key))
  end

  def test_verify_peer_asks_ssl_verify_peer
    seen = tls_pair(server_tls, { verify_peer: true })
    assert_true(seen[:client][:handshake])
    assert_equal(SERVER.to_pem, seen[:client][:verified].last) # leaf last
  end

  def test_ssl_verify_peer_false_rejects
    seen = tls_pair(server_tls, { verify_peer: true }, verify: false)
    assert_nil(seen[:client][:handshake])
    assert_nil(seen[:client][:data])
    assert_equal(Errno::EPROTO, seen[:client][:reason])
  end

  def test_verify_by_default_refuses_untrusted_server
    EM.tls_verify_by_default = true
    seen = tls_pair(server_tls, {})
    assert_nil(seen[:client][:handshake])
    assert_nil(seen[:client][:verified]) # libem's verdict, not Ruby's
    assert_equal(Errno::EPROTO, seen[:client][:reason])
  ensure
    EM.tls_verify_by_default = false
  end

  # With the test CA as the trust store (SSL_CERT_FILE, which libem's
  # system store reads), verification by default accepts the server for
  # the address it was reached at, and refuses it for another name.
  def test_verify_by_default_checks_chain_and_name
    EM.tls_verify_by_default = true
    old = ENV['SSL_CERT_FILE']
    ENV['SSL_CERT_FILE'] = File.join(DIR, 'ca.crt')
    good = tls_pair(server_tls, {})
    bad = tls_pair(server_tls, { sni_hostname: 'not-the-server.test' })
    assert_true(good[:client][:handshake])
    assert_equal('secret', good[:client][:data])
    assert_nil(bad[:client][:handshake])
    assert_equal(Errno::EPROTO, bad[:client][:reason])
  ensure
    EM.tls_verify_by_default = false
    ENV['SSL_CERT_FILE'] = old
  end

  def test_server_verify_peer_sees_client_certificate
    client = { private_key_file: File.join(DIR, 'client.key'), cert_chain_file: File.join(DIR, 'client.crt') }
    seen = tls_pair(server_tls(verify_peer: true), client)
    assert_true(seen[:server][:handshake])
    assert_equal(CLIENT.to_pem, seen[:server][:verified].last)
    assert_equal(CLIENT.to_pem, seen[:server][:peer_cert])
  end

  # No host name on a unix socket: with verify_peer Ruby alone decides.
  def test_verify_peer_over_unix_socket
    verified = nil
    handshake = false
    Dir.mktmpdir do |dir|
      path = File.join(dir, 's')
      sopts = server_tls
      server = Module.new { define_method(:post_init) { start_tls(sopts) } }
      client = Module.new do
        define_method(:connection_completed) { start_tls(verify_peer: true) }
        define_method(:ssl_verify_peer) { |pem| verified = pem; true }
        define_method(:ssl_handshake_completed) { handshake = true; close_connection }
        define_method(:unbind) { EM.stop }
      end
      em do
        EM.start_unix_domain_server(path, server)
        EM.connect_unix_domain(path, client)
      end
    end
    assert_true(handshake)
    assert_equal(SERVER.to_pem, verified)
  end

  def test_sni_hostname
    seen = tls_pair(server_tls, { sni_hostname: 'example.test' })
    assert_equal('example.test', seen[:server][:sni])
  end

  def test_tls_1_3_only
    seen = tls_pair(server_tls, { ssl_version: %w[tlsv1_3] })
    assert_equal('TLSv1.3', seen[:client][:protocol])
  end

  def test_old_protocols_only_are_refused
    err = nil
    port = free_port
    em do
      EM.start_server('127.0.0.1', port, EchoServer)
      EM.connect('127.0.0.1', port) do |c|
        begin
          c.start_tls(ssl_version: %w[tlsv1])
        rescue EM::Unsupported => e
          err = e
        end
        EM.stop
      end
    end
    assert_kind_of(EM::Unsupported, err)
  end

  def test_bad_key_raises
    bad = File.join(DIR, 'bad.key')
    File.write(bad, "not a key\n")
    port = free_port
    err = nil
    server = Module.new do
      define_method(:post_init) do
        begin
          start_tls(private_key_file: bad, cert_chain_file: File.join(DIR, 'server.crt'))
        rescue EM::InvalidPrivateKey => e
          err = e
        end
        close_connection
      end
    end
    em do
      EM.start_server('127.0.0.1', port, server)
      EM.connect('127.0.0.1', port, Module.new { define_method(:unbind) { EM.stop } })
    end
    assert_kind_of(EM::InvalidPrivateKey, err)
  end
end
