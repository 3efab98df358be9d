# Shared by the tests: loads EventMachine's Ruby layer (Debian's
# ruby-eventmachine, unchanged) on top of the extension first on the load
# path, and gives each test a bounded reactor run.
require 'eventmachine'
require 'socket'
require 'tmpdir'
require 'digest'
require 'test/unit'

module LibemTest
  # Every test first makes sure the extension under test is libem's, not
  # the stock one a misconfigured load path would give. RBEM_TEST_STOCK=1
  # asks for the stock extension instead, to compare the two (ruby/README.md).
  STOCK = ENV['RBEM_TEST_STOCK'] == '1'

  def setup
    assert_equal(!STOCK, EventMachine.const_defined?(:LIBEM_VERSION),
                 "wrong rubyeventmachine.so: #{$LOADED_FEATURES.grep(/rubyeventmachine/)}")
    assert_equal(:extension, EventMachine.library_type)
  end

  # For the comparison run only: a case that would crash the stock
  # extension's process is left out there (and counted as not passed).
  def not_on_stock(why)
    omit("stock: #{why}") if STOCK
  end

  # EM.run, bounded: a test that hangs fails after `limit` seconds.
  def em(limit = 5, &blk)
    EM.run do
      EM.add_timer(limit) { EM.stop; flunk("timed out after #{limit}s") }
      blk.call
    end
  end

  # A port nobody listens on (loopback only).
  def free_port
    s = TCPServer.new('127.0.0.1', 0)
    s.addr[1]
  ensure
    s&.close
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end

# Echoes what it reads.
module EchoServer
  def receive_data(data)
    send_data(data)
  end
end
