# Loads a Vagrantfile without Vagrant and prints, as JSON, every configuration call it makes: each call's path
# (config.vm.define(pc1).vm.provider(libvirt).boot), positional arguments and keyword arguments. Used by
# tests/interop/test_vagrantfile.py to check what the Vagrantfile asks of Vagrant: `ruby vagrantfile_recorder.rb
# Vagrantfile`.
require "json"

CALLS = []

# Stands for any configuration object: records each call and returns a recorder for what follows it.
class Recorder < BasicObject
  def initialize(path)
    @path = path
  end

  def method_missing(name, *args, **kwargs, &block)
    path = block ? "#{@path}.#{name}(#{args.join(',')})" : "#{@path}.#{name}"
    ::CALLS << { "path" => "#{@path}.#{name}", "args" => args.map { |a| plain(a) },
                 "kwargs" => kwargs.to_h { |k, v| [k.to_s, plain(v)] } }
    child = ::Recorder.new(path)
    block&.call(child)
    child
  end

  def respond_to_missing?(_name, _private = false)
    true
  end

  private

  def plain(value)
    case value
    when ::Hash then value.to_h { |k, v| [k.to_s, plain(v)] }
    when ::Array then value.map { |v| plain(v) }
    when ::Symbol then value.to_s
    when nil, true, false, ::Numeric, ::String then value
    else value.to_s
    end
  end
end

module Vagrant
  def self.configure(version)
    raise ArgumentError, "configuration version #{version}" unless version == "2"

    yield Recorder.new("config")
  end
end

load ARGV.fetch(0)
puts JSON.generate({ "calls" => CALLS, "env" => { "VAGRANT_NO_PARALLEL" => ENV["VAGRANT_NO_PARALLEL"] } })
